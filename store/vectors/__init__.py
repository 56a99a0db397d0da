"""A library version's vector files (:mod:`.files`: the exact unit vectors, norms, class
offsets and baseline vectors, memory-mapped) and library-wide retrieval over them
(:mod:`.retrieval`: exact scans, ClassIVF, FAISS indexes)."""
