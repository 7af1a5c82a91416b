"""The hardware boundary: the only modules that import vendor libraries; each has a fake."""
