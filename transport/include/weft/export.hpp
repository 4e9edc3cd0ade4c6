// Symbol visibility for the weft shared library.
#pragma once

#if defined(WEFT_STATIC_DEFINE)
#define WEFT_EXPORT
#else
#define WEFT_EXPORT __attribute__((visibility("default")))
#endif
