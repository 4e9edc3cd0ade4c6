// Umbrella header: everything a producer or consumer needs.
#pragma once

#include "weft/broadcast.hpp"  // IWYU pragma: export
#include "weft/channel.hpp"    // IWYU pragma: export
#include "weft/error.hpp"      // IWYU pragma: export
#include "weft/idle.hpp"       // IWYU pragma: export
#include "weft/mpsc.hpp"       // IWYU pragma: export
#include "weft/options.hpp"    // IWYU pragma: export
#include "weft/result.hpp"     // IWYU pragma: export
#include "weft/spsc.hpp"       // IWYU pragma: export
