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
