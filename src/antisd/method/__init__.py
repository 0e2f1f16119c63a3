"""The method, framework-neutral: settings, privileged context, the teacher pass, teacher sources, the step (docs/architecture.md)."""
