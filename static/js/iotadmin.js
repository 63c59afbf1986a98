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

// Replace the element #id with the same element of the page at url, as it is now; <details>
// keep their open state. A part htmx is posting from (or swapped meanwhile) is left to htmx.
// Returns whether the part was replaced. Used by the audit log below and by live.js.
const htmxBusy = (node) => node.matches(".htmx-request") || node.querySelector(".htmx-request");
async function replaceFrom(id, url) {
  const current = document.getElementById(id);
  if (!current || htmxBusy(current)) return false;
  let response;
  try {
    response = await fetch(url, { headers: { Accept: "text/html" } });
  } catch {
    return false; // offline: the next change shows it again
  }
  if (!response.ok) return false; // keep what is shown rather than an error page
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const fresh = page.getElementById(id);
  if (!fresh || document.getElementById(id) !== current || htmxBusy(current)) return false;
  const open = [...current.querySelectorAll("details")].map((d) => d.open);
  fresh.querySelectorAll("details").forEach((d, i) => { if (i < open.length) d.open = open[i]; });
  const adopted = document.adoptNode(fresh);
  current.replaceWith(adopted);
  if (window.htmx) window.htmx.process(adopted);
  return true;
}

// An htmx answer that recorded an audit entry (a reveal, a twin write, a simulator started)
// says HX-Trigger: audit-changed; show the page's audit log as it is now.
document.body.addEventListener("audit-changed", () => replaceFrom("audit", location.href));
