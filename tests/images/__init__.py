"""Images built here with buildah (tests/cluster/images.py) and their Dockerfiles."""
