from janus_ray.cli import run

run()
