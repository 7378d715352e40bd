// Copy buttons of the console (`<button data-copy="ID" hidden>`): shown only when this runs,
// they copy the text of the element ID. Without JavaScript the text stays selectable.
"use strict";
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  var target = document.getElementById(button.getAttribute("data-copy"));
  if (!target) return;
  button.hidden = false;
  button.addEventListener("click", function () {
    var text = "value" in target && target.tagName === "INPUT" ? target.value : target.textContent;
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { select(target); });
    } else {
      select(target);
      try { if (document.execCommand("copy")) done(); } catch (e) { /* selected: copy by hand */ }
    }
  });
});
function select(target) {
  if (target.tagName === "INPUT") { target.focus(); target.select(); return; }
  var range = document.createRange();
  range.selectNodeContents(target);
  var selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}
