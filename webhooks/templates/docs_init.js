(function () {
  var system = '-apple-system, "Segoe UI", Roboto, "PingFang SC", "Microsoft YaHei", sans-serif';
  // Problem types link to /docs#problem-<slug>: anchors inside the guide, which Redoc's own
  // hash routing does not know, so scroll to them once it has rendered.
  function toProblem() {
    var id = decodeURIComponent(location.hash.slice(1));
    var target = id.indexOf("problem-") === 0 && document.getElementById(id);
    if (target) target.scrollIntoView();
  }
  Redoc.init("/openapi.json", {
    expandResponses: "200,202",
    jsonSampleExpandLevel: 3,
    requiredPropsFirst: true,
    pathInMiddlePanel: true,
    theme: {
      typography: {
        fontFamily: system,
        headings: {fontFamily: system},
        code: {fontFamily: "ui-monospace, Menlo, Consolas, monospace"}
      }
    }
  }, document.getElementById("redoc"), toProblem);
  window.addEventListener("hashchange", toProblem);
})();
