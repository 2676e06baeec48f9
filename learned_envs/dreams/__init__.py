"""Dreams: the batched step core and its faces (``DreamEnv``, ``DreamVectorEnv``, ``DreamSB3VecEnv``)."""
