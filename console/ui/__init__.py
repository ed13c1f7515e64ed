"""Windows, item models, delegates and dialogs: the only place that draws."""
