"""Tables and figures from sweep folders (matplotlib and scikit-learn; not needed by the plug-in)."""
