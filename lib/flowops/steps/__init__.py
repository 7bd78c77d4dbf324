"""The pipeline steps: each module holds every read and write of one step (see DESIGN.md, Layout)."""
