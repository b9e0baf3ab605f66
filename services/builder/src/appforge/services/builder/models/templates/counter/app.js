"use strict";

// Pure: the count after an action.
function applyAction(count, action) {
  if (action === "increment") {
    return count + 1;
  }
  if (action === "decrement") {
    return count - 1;
  }
  if (action === "reset") {
    return 0;
  }
  return count;
}

// Pure: what a key press means, or null when the counter ignores it.
function keyToAction(key) {
  if (key === "+" || key === "=" || key === "ArrowUp") {
    return "increment";
  }
  if (key === "-" || key === "ArrowDown") {
    return "decrement";
  }
  if (key === "0") {
    return "reset";
  }
  return null;
}

function start() {
  const display = document.getElementById("count");
  let count = 0;

  function run(action) {
    count = applyAction(count, action);
    display.textContent = String(count);
  }

  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", function () { run(button.dataset.action); });
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    const action = keyToAction(event.key);
    if (action !== null) {
      event.preventDefault();
      run(action);
    }
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
  module.exports = { applyAction, keyToAction };
}
