"""The CNI protocol, and nothing else: env, stdin, versions, results, errors.

Modules here import only the standard library, so the paths that must start
fast (VERSION, errors, STATUS) stay fast.
"""
