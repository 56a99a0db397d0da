"""The CLIP encoder: loading a model (:mod:`.clip_encoder`), its two towers without
sentence-transformers (:mod:`.clipmodel`, :mod:`.vision`), the prefix-sharing text pass
(:mod:`.textpath`, :mod:`.prefixes`), identity from content (:mod:`.fingerprint`,
:mod:`.legacy_ids`) and offline random-weight test models (:mod:`.testmodel`). The only
package that imports torch; importing it imports nothing heavy."""
