// Live refresh: htmx polls the [data-live] region; skip the polls while the tab is hidden, and
// refresh at once when it shows again. (No inline scripts: the page's CSP allows only this file.)
document.addEventListener("htmx:beforeRequest", function (event) {
  if (document.hidden && event.detail.elt.hasAttribute("data-live")) {
    event.preventDefault();
  }
});
document.addEventListener("visibilitychange", function () {
  if (!document.hidden && window.htmx) {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      window.htmx.trigger(el, "refresh");
    });
  }
});
// The workflow list's "select all on this page" box ticks every row's box of its form.
document.addEventListener("change", function (event) {
  var form = event.target.getAttribute && event.target.getAttribute("data-select-all");
  if (form) {
    document.querySelectorAll("input[name=workflow_id][form='" + form + "']").forEach(
      function (box) { box.checked = event.target.checked; });
  }
});
