// chatsite page script, header menus: <details class="menu"> (the Export menu). They open
// and their links work without the script; this closes an open menu the way menus close:
// on Escape (focus back on its button), on a click outside it, and once an item is chosen.

const openMenus = () => document.querySelectorAll("details.menu[open]");

function close(menu, { focus = false } = {}) {
  menu.open = false;
  if (focus) menu.querySelector("summary").focus();
}

export function watchMenus() {
  document.addEventListener("click", (event) => {
    for (const menu of openMenus()) {
      const inside = menu.contains(event.target);
      // A chosen item (a download) closes its menu; a click on the summary toggles it.
      if (!inside || event.target.closest(".menu__item")) close(menu);
    }
  });
  document.addEventListener(
    "keydown",
    (event) => {
      if (event.key !== "Escape" || event.defaultPrevented) return;
      const menus = openMenus();
      if (!menus.length) return;
      // Escape closes the menu only (not an answer, not the sidebar).
      event.preventDefault();
      for (const menu of menus) close(menu, { focus: menu.contains(document.activeElement) });
    },
    true,
  );
}
