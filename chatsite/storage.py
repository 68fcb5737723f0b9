"""Production static files: WhiteNoise's compressed, hashed copies, with the page script's
ES module imports pointing at hashed copies too."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    # The page script is static/chat/main.js and the modules it imports by relative path.
    # Rewriting `import … from "./page.js"` to "./page.<hash>.js" lets a browser cache every
    # module for good, and gives main.js a new name whenever a module it imports changes:
    # after a deploy, no page runs a new entry module with an old module from its cache.
    support_js_module_import_aggregation = True
