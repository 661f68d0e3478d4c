"""What a deploy needs besides template.yaml: the layer build, parameters, Server A."""
