// Runs before the first paint so the page does not flash the wrong theme.
(function () {
  try {
    var saved = localStorage.getItem("orchard-theme");
    var dark = saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
    document.documentElement.classList.toggle("dark", dark);
    document.documentElement.style.colorScheme = dark ? "dark" : "light";
  } catch (e) {}
})();
