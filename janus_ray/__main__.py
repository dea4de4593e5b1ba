import sys

from janus_ray.cli import main

sys.exit(main())
