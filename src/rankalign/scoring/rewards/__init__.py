"""The rewards `rankalign score` and `rankalign evaluate` use: specs, registry and kinds."""
