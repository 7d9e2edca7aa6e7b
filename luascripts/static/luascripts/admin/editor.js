/* The script page's editor: error marks, unsaved-changes guard, Ctrl+S, dark mode.
 * Progressive enhancement: without JavaScript the editor is a plain text area in the same
 * form as the console, errors are listed above it, and nothing else is lost. Runs after
 * django-ace's own window "load" handler has created the editor. */
(function () {
  "use strict";
  var DARK_THEME = "ace/theme/tomorrow_night", LIGHT_THEME = "ace/theme/chrome";

  function widgetEditor() {
    var widget = document.querySelector(".chistone-editor .django-ace-widget");
    return widget && widget.editor ? widget.editor : null;
  }

  function annotate(editor) {
    var holder = document.getElementById("chistone-editor-errors");
    if (!holder) { return; }
    var errors = JSON.parse(holder.textContent || "[]");
    var session = editor.getSession();
    var annotations = [];
    errors.forEach(function (e) {
      if (!e.line) { return; }
      annotations.push({row: e.line - 1, column: Math.max((e.column || 1) - 1, 0),
                        text: e.message, type: "error"});
      session.addGutterDecoration(e.line - 1, "chistone-error-line");
    });
    session.setAnnotations(annotations);
    if (annotations.length) { editor.gotoLine(annotations[0].row + 1, 0, false); }
    // Once the operator edits, the marks describe an older text: clear them.
    session.once("change", function () {
      annotations.forEach(function (a) { session.removeGutterDecoration(a.row, "chistone-error-line"); });
      session.clearAnnotations();
    });
  }

  /* Dark mode: the admin's own toggle (html[data-theme]) or, on "auto", the system's. */
  function isDark() {
    var theme = document.documentElement.getAttribute("data-theme") || "auto";
    if (theme === "dark") { return true; }
    if (theme === "light") { return false; }
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  }
  function followTheme(editor) {
    function apply() {
      var wanted = isDark() ? DARK_THEME : LIGHT_THEME;
      editor.setTheme(wanted);
      document.documentElement.setAttribute("data-editor-theme", wanted.split("/").pop());
    }
    apply();
    new MutationObserver(apply).observe(document.documentElement,
                                        {attributes: true, attributeFilter: ["data-theme"]});
    if (window.matchMedia) {
      window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", apply);
    }
  }

  /* Unsaved changes: say so, make Run use them, and ask before leaving the page. */
  function guard(editor) {
    var form = document.getElementById("script-form");
    var state = document.getElementById("editor-state");
    var savedHolder = document.getElementById("chistone-saved-source");
    if (!form || !savedHolder) { return; }
    var saved = JSON.parse(savedHolder.textContent || '""');
    var submitting = false;
    var select = document.getElementById("id_version");
    function dirty() { return editor.getValue() !== saved; }
    function show() {
      var text = document.getElementById("editor-state-text");
      if (!state || !text) { return; }
      var base = state.getAttribute("data-base");
      if (dirty()) {
        text.textContent = base ? "The editor holds unsaved changes based on " + base + "."
                                : "The editor holds an unsaved script.";
      } else {
        text.textContent = base ? "The editor holds " + base + ", as saved."
                                : "The editor holds a starter script; nothing is saved yet.";
      }
      state.classList.toggle("unsaved", dirty());
    }
    editor.getSession().on("change", function () {
      if (select && dirty() && select.querySelector("option[value=editor]")) {
        select.value = "editor";  // Run now tries what the operator is looking at
      }
      show();
    });
    form.addEventListener("submit", function () { submitting = true; });
    window.addEventListener("beforeunload", function (event) {
      if (submitting || !dirty()) { return undefined; }
      event.preventDefault();
      event.returnValue = "The editor has unsaved changes.";
      return event.returnValue;
    });
    /* Ctrl+S / Cmd+S: save the editor's text as a new version (a draft if it has errors). */
    function save() {
      var button = document.getElementById("save-version");
      if (!button) { return; }
      submitting = true;
      if (form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
    }
    editor.commands.addCommand({name: "chistoneSave", bindKey: {win: "Ctrl-S", mac: "Command-S"},
                                exec: save});
    document.addEventListener("keydown", function (event) {
      if ((event.ctrlKey || event.metaKey) && !event.altKey && (event.key === "s" || event.key === "S")) {
        event.preventDefault();
        save();
      }
    });
  }

  window.addEventListener("load", function () {
    window.setTimeout(function () {
      var editor = widgetEditor();
      if (!editor) { return; }
      annotate(editor);
      followTheme(editor);
      guard(editor);
    }, 0);
  });
})();
