"""`TransformersBackend`: LLaVA in this process: loading, template, engine, micro-batcher."""
