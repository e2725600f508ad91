"""The catalog shared by its areas (collections, projects, products, assets, files): the
tables, the access rules and their errors, upload checks, stored images and their signed links,
and what a generation job needs from it."""
