"""The DAVS networks, one per file. Module and parameter names follow the original code so that the authors'
released checkpoint loads strictly (see davs_model.compat)."""
