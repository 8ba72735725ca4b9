"""The API's routes, one file per resource; each route only translates between HTTP and the Backend."""
