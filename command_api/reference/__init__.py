"""The API's reference, served by the app itself: the OpenAPI document completed from one
place (``openapi``: every status each operation can answer, with problem examples; tag
descriptions; multipart examples), Swagger UI and ReDoc from files the ``fastapi-offline``
package ships (no CDN), and a page per problem ``code`` (``problem_types``, ``endpoints``:
``GET /problems/{code}``), which each problem's ``type`` links to."""
