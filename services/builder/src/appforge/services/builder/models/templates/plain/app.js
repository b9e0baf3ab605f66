"use strict";

// Pure: the theme after a toggle.
function nextTheme(theme) {
  return theme === "dark" ? "light" : "dark";
}

function start() {
  const button = document.getElementById("theme");
  button.addEventListener("click", function () {
    const theme = nextTheme(document.body.dataset.theme || "light");
    document.body.dataset.theme = theme;
    button.setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
  });
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}

if (typeof module !== "undefined") {
  module.exports = { nextTheme };
}
