"""Gradio web demo (text-to-image / text-to-video). Not built yet: see the demo issue."""
