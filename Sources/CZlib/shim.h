#ifndef FT_CZLIB_SHIM_H
#define FT_CZLIB_SHIM_H
#include <zlib.h>
#endif
