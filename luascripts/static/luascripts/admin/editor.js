/* Mark validation errors in the ace editor's gutter, at their lines.
 * Progressive enhancement: without JavaScript the same errors are listed above the editor
 * with the offending lines quoted. Runs after django-ace's own window "load" handler. */
(function () {
  "use strict";
  function annotate() {
    var holder = document.getElementById("chistone-editor-errors");
    var widget = document.querySelector(".chistone-editor .django-ace-widget");
    if (!holder || !widget || !widget.editor) { return; }
    var errors = JSON.parse(holder.textContent || "[]");
    var session = widget.editor.getSession();
    var annotations = [];
    errors.forEach(function (e) {
      if (!e.line) { return; }
      annotations.push({row: e.line - 1, column: Math.max((e.column || 1) - 1, 0),
                        text: e.message, type: "error"});
      session.addGutterDecoration(e.line - 1, "chistone-error-line");
    });
    session.setAnnotations(annotations);
    if (annotations.length) { widget.editor.gotoLine(annotations[0].row + 1, 0, false); }
    // Once the operator edits, the marks describe an older text: clear them.
    session.once("change", function () {
      annotations.forEach(function (a) { session.removeGutterDecoration(a.row, "chistone-error-line"); });
      session.clearAnnotations();
    });
  }
  window.addEventListener("load", function () { window.setTimeout(annotate, 0); });
})();
