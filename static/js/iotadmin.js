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

// An htmx answer that recorded an audit entry (a reveal, a twin write, a simulator started)
// says HX-Trigger: audit-changed; show the page's audit log as it is now.
document.body.addEventListener("audit-changed", async () => {
  const current = document.getElementById("audit");
  if (!current) return;
  try {
    const response = await fetch(location.href, { headers: { Accept: "text/html" } });
    if (!response.ok) return; // keep the log shown rather than an error page
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("audit");
    if (fresh) current.replaceWith(document.adoptNode(fresh));
  } catch {
    // offline: the log is shown again with the next change or reload
  }
});
