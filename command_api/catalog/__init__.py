"""The catalog shared by its areas (collections, projects, products, assets, files): the
tables, the access rules, upload checks, cursors, and what a generation job needs from it."""
