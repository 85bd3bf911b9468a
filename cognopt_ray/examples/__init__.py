"""Small functions shipped with the package, for trying the REST routes (see the README)."""
