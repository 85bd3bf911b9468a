"""The Ray Serve application that exposes cognopt_ray as REST under ``/api/v0/optimization``."""
