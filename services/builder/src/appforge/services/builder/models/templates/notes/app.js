"use strict";

const STORAGE_KEY = "appforge.notes";

// Pure list operations: each returns a new list, newest note first.
function addNote(notes, text, savedAt) {
  const trimmed = String(text).trim();
  if (trimmed === "") {
    return notes;
  }
  const id = notes.reduce(function (max, note) { return Math.max(max, note.id); }, 0) + 1;
  return [{ id: id, text: trimmed, savedAt: savedAt }].concat(notes);
}

function removeNote(notes, id) {
  return notes.filter(function (note) { return note.id !== id; });
}

function isNote(value) {
  return value !== null && typeof value === "object" && typeof value.id === "number" &&
    typeof value.text === "string" && typeof value.savedAt === "string";
}

function loadNotes(storage) {
  if (storage === null) {
    return [];
  }
  try {
    const parsed = JSON.parse(storage.getItem(STORAGE_KEY) || "[]");
    return Array.isArray(parsed) ? parsed.filter(isNote) : [];
  } catch (error) {
    return [];
  }
}

function saveNotes(storage, notes) {
  if (storage === null) {
    return false;
  }
  try {
    storage.setItem(STORAGE_KEY, JSON.stringify(notes));
    return true;
  } catch (error) {
    return false;
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
  const form = document.getElementById("note-form");
  const textarea = document.getElementById("note-text");
  const list = document.getElementById("notes");
  const status = document.getElementById("status");
  let notes = loadNotes(storage);

  function update(next, message) {
    notes = next;
    const saved = saveNotes(storage, notes);
    status.textContent = saved ? message : message + " (not stored: storage is unavailable)";
    render();
  }

  function render() {
    list.replaceChildren();
    if (notes.length === 0) {
      const empty = document.createElement("li");
      empty.className = "status";
      empty.textContent = "No notes yet.";
      list.append(empty);
    }
    for (const note of notes) {
      const row = document.createElement("li");
      row.className = "note";
      const text = document.createElement("p");
      text.textContent = note.text;
      const footer = document.createElement("footer");
      const time = document.createElement("time");
      time.dateTime = note.savedAt;
      time.textContent = new Date(note.savedAt).toLocaleString();
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "danger";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", "Delete note saved " + time.textContent);
      remove.addEventListener("click", function () {
        update(removeNote(notes, note.id), "Note deleted.");
      });
      footer.append(time, remove);
      row.append(text, footer);
      list.append(row);
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (textarea.value.trim() === "") {
      return;
    }
    update(addNote(notes, textarea.value, new Date().toISOString()), "Note saved.");
    textarea.value = "";
    textarea.focus();
  });

  textarea.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
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
  module.exports = { addNote, removeNote, loadNotes, saveNotes };
}
