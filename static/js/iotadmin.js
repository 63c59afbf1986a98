// One-click copy for connection strings: <button data-copy="#element-id">.
async function copyText(source) {
  const text = source.value !== undefined ? source.value : source.textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Clipboard API refused (e.g. plain http on another host): select it and try the old way.
    const range = document.createRange();
    range.selectNodeContents(source);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    return document.execCommand("copy");
  }
}

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const label = button.textContent;
  // Say so when the browser refused: the text is left selected for Ctrl+C.
  button.textContent = (await copyText(source)) ? "Copied" : "Selected: press Ctrl+C";
  setTimeout(() => { button.textContent = label; }, 2000);
});

// A form that asks first: <form data-confirm="Question?">. (An inline onsubmit would be
// refused by the Content-Security-Policy.)
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !confirm(form.dataset.confirm)) event.preventDefault();
});

// A form being sent says so and is not sent twice: its buttons are marked busy until the
// answer replaces the page (or, for htmx, the request ends). Buttons are not disabled: a
// disabled submitter would drop its own name and value from the form. On window, so it runs
// after every document-level handler (a confirm that was declined has prevented the submit).
function markBusy(form, busy) {
  for (const button of form.querySelectorAll("button")) {
    if (busy) button.setAttribute("aria-busy", "true");
    else button.removeAttribute("aria-busy");
  }
  if (busy) form.dataset.busy = "true";
  else delete form.dataset.busy;
}

window.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.hasAttribute("hx-post") || form.hasAttribute("hx-get")) return; // htmx's own, below
  if (form.dataset.busy) event.preventDefault();
  else if (!event.defaultPrevented) markBusy(form, true);
});

document.addEventListener("htmx:beforeRequest", (event) => {
  const form = event.target.closest("form");
  if (!form) return;
  if (form.dataset.busy) event.preventDefault();
  else markBusy(form, true);
});
document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.target.closest("form");
  if (form) markBusy(form, false);
});
// Back to a page kept in the browser's cache: what it was sending has ended.
window.addEventListener("pageshow", () => {
  for (const form of document.querySelectorAll("form[data-busy]")) markBusy(form, false);
});
