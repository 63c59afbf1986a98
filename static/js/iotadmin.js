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
