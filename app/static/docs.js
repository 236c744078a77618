// Starts Swagger UI on /docs (a file, not an inline script, so the page's content security policy
// needs no 'unsafe-inline' for scripts). The options are FastAPI's defaults.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
