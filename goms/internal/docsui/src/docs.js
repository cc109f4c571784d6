// The /docs page of a goms listener: Swagger UI over the OpenAPI document
// the listener serves at /openapi.json. Everything it needs is in this
// bundle; it loads nothing from elsewhere.
import SwaggerUIBundle from "swagger-ui-dist/swagger-ui-bundle.js";
import "swagger-ui-dist/swagger-ui.css";

SwaggerUIBundle({
  // Relative to /docs, so that a prefix a proxy adds still works.
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#docs",
  deepLinking: true,
  tryItOutEnabled: true,
  displayOperationId: true,
  defaultModelsExpandDepth: 0,
  // No call to the public validator service.
  validatorUrl: null,
});
