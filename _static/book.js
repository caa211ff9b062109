// Column names such as `chance_normalized_high` or `images_per_s` (and values such as `task_arithmetic`) have no
// spaces, so a table cell cannot wrap and the whole table grows past the content column. Offer a line break after
// each underscore (and slash) in table headers and cells; the text reads and copies the same.
document.addEventListener("DOMContentLoaded", () => {
  const walker = (root) => document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (const header of document.querySelectorAll("article table th, article table.dataframe td")) {
    const texts = [];
    for (let w = walker(header), node = w.nextNode(); node; node = w.nextNode()) texts.push(node);
    for (const node of texts) {
      if (!/[_/]/.test(node.nodeValue)) continue;
      const parts = node.nodeValue.split(/(?<=[_/])/);
      const fragment = document.createDocumentFragment();
      parts.forEach((part, i) => {
        fragment.append(part);
        if (i < parts.length - 1) fragment.append(document.createElement("wbr"));
      });
      node.replaceWith(fragment);
    }
  }
});
