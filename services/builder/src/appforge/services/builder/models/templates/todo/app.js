"use strict";

const STORAGE_KEY = "appforge.todo.items";

// Pure list operations: each returns a new list.
function addItem(items, text) {
  const trimmed = String(text).trim();
  if (trimmed === "") {
    return items;
  }
  const id = items.reduce(function (max, item) { return Math.max(max, item.id); }, 0) + 1;
  return items.concat([{ id: id, text: trimmed, done: false }]);
}

function toggleItem(items, id) {
  return items.map(function (item) {
    return item.id === id ? { id: item.id, text: item.text, done: !item.done } : item;
  });
}

function removeItem(items, id) {
  return items.filter(function (item) { return item.id !== id; });
}

function remaining(items) {
  return items.filter(function (item) { return !item.done; }).length;
}

function isItem(value) {
  return value !== null && typeof value === "object" && typeof value.id === "number" &&
    typeof value.text === "string" && typeof value.done === "boolean";
}

function loadItems(storage) {
  if (storage === null) {
    return [];
  }
  try {
    const parsed = JSON.parse(storage.getItem(STORAGE_KEY) || "[]");
    return Array.isArray(parsed) ? parsed.filter(isItem) : [];
  } catch (error) {
    return [];
  }
}

function saveItems(storage, items) {
  if (storage === null) {
    return;
  }
  try {
    storage.setItem(STORAGE_KEY, JSON.stringify(items));
  } catch (error) {
    // Storage full or blocked: the list still works for this visit.
  }
}

function browserStorage() {
  try {
    return typeof localStorage === "undefined" ? null : localStorage;
  } catch (error) {
    return null;
  }
}

function start() {
  const storage = browserStorage();
  const form = document.getElementById("add-form");
  const input = document.getElementById("new-item");
  const list = document.getElementById("items");
  const summary = document.getElementById("summary");
  let items = loadItems(storage);

  function update(next) {
    items = next;
    saveItems(storage, items);
    render();
  }

  function render() {
    list.replaceChildren();
    for (const item of items) {
      const row = document.createElement("li");
      row.className = item.done ? "item done" : "item";
      const label = document.createElement("label");
      const checkbox = document.createElement("input");
      checkbox.type = "checkbox";
      checkbox.checked = item.done;
      checkbox.addEventListener("change", function () { update(toggleItem(items, item.id)); });
      const text = document.createElement("span");
      text.textContent = item.text;
      label.append(checkbox, text);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "danger";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", "Delete " + item.text);
      remove.addEventListener("click", function () { update(removeItem(items, item.id)); });
      row.append(label, remove);
      list.append(row);
    }
    const left = remaining(items);
    summary.textContent = items.length === 0
      ? "Nothing to do yet."
      : left + (left === 1 ? " item" : " items") + " left of " + items.length + ".";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    update(addItem(items, input.value));
    input.value = "";
    input.focus();
  });

  render();
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}

if (typeof module !== "undefined") {
  module.exports = { addItem, toggleItem, removeItem, remaining, loadItems, saveItems };
}
