// What is wrong with a screen's layout, as a list of sentences (tests/test_screens.py):
// the page or any column, section, list or key text scrolls or is cut (its scroll size
// beyond its client size), or a key element (the selectors passed) is missing, empty or
// outside the viewport. Elements in an optional section the screen left out are skipped.
((keys) => {
  const bad = [];
  const name = (e) => e.id ? "#" + e.id : e.tagName.toLowerCase() + (e.className ? "." + String(e.className).trim().split(/ +/).join(".") : "");
  const de = document.documentElement;
  if (de.scrollHeight > innerHeight || de.scrollWidth > innerWidth) bad.push(`the page scrolls: ${de.scrollWidth}x${de.scrollHeight}`);
  const cut = (e) => e.scrollHeight > e.clientHeight + 1 || e.scrollWidth > e.clientWidth + 1;
  for (const e of document.querySelectorAll("header, .banner, #notice, #notice .text, #prompt, main, .col, section, .fit, .name, .target, .cubby, .loc, .lamp, .progress, .cell, .special")) {
    if (!e.getClientRects().length) continue;
    if (cut(e)) bad.push(`${name(e)} cut: ${e.scrollWidth}x${e.scrollHeight} in ${e.clientWidth}x${e.clientHeight}: ${e.innerText.slice(0, 60)}`);
  }
  for (const sel of keys) {
    const all = document.querySelectorAll(sel);
    if (!all.length) { bad.push(`${sel}: none on the page`); continue; }
    for (const e of all) {
      if (e.closest("[data-drop][hidden]")) continue;  // an optional section the size left out
      const r = e.getBoundingClientRect();
      if (!r.height || !e.innerText.trim() && !e.children.length) bad.push(`${sel}: empty`);
      if (r.top < 0 || r.left < 0 || r.bottom > innerHeight + 0.5 || r.right > innerWidth + 0.5) bad.push(`${sel}: outside the viewport ${JSON.stringify(r)}`);
    }
  }
  return bad;
})
