// Loaded after require.js and before the ipywidgets HTML manager (book/_config.yml, nb_ipywidgets_js).
// RequireJS resolves module ids against the page, and the HTML manager loads its own files (the Font Awesome
// fonts of the widgets) from where its module id points: point that id at this book's _static/html-manager/,
// so the fonts come from the book itself, whatever the depth of the page.
(function () {
  var staticDir = document.currentScript.src.replace(/[^/]*$/, "");
  require.config({ paths: { "@jupyter-widgets/html-manager/dist": staticDir + "html-manager" } });
})();

// The widgets typeset their labels through MathJax 2's `MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])`
// (@jupyter-widgets/base), but Sphinx loads MathJax 3, which has no Hub: every widget label would throw
// "Cannot read properties of undefined (reading 'Queue')". Give whatever `window.MathJax` holds (Sphinx's
// configuration object first, MathJax 3 itself once it has loaded) a Hub that forwards to MathJax 3.
(function () {
  var hub = {
    Queue: function (job) {
      var element = Array.isArray(job) ? job[2] : undefined;
      var mathjax = window.MathJax;
      if (mathjax && mathjax.typesetPromise) {
        mathjax.typesetPromise(element ? [element] : undefined).catch(function (err) { console.warn(err); });
      } else if (mathjax && mathjax.startup && mathjax.startup.promise) {
        mathjax.startup.promise.then(function () { hub.Queue(job); });
      } // otherwise MathJax 3 has not loaded yet and typesets the page itself when it starts
    },
  };
  function withHub(value) {
    if (value && typeof value === "object" && !value.Hub) {
      value.Hub = hub;
    }
    return value;
  }
  var current = withHub(window.MathJax);
  Object.defineProperty(window, "MathJax", {
    configurable: true,
    get: function () { return current; },
    set: function (value) { current = withHub(value); },
  });
})();
