"""Product images (garments) of a project."""
