"""One module per tab of the page (`app.ui.build` assembles them); `common` is what they share."""
