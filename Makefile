# transfer: PGXS build.
#
#   make                 build the extension (core + PostgreSQL layer)
#   make install         install into the PostgreSQL found by PG_CONFIG
#   make unittest        build and run the core's C unit tests (no server)
#   make unittest SANITIZE=1   the same under ASan + UBSan
#   scripts/test.sh      everything: unit tests, pg_regress and pgTAP on a throwaway cluster

EXTENSION = transfer
EXTVERSION = $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" $(EXTENSION).control)

# Sources are found by folder: src/core/ (and its concern folders) never
# includes a PostgreSQL header; src/pg/ is the layer over it.
CORE_SRCS = $(sort $(shell find src/core -name '*.c'))
PG_SRCS   = $(sort $(shell find src/pg -name '*.c'))
CORE_HDRS = $(shell find src/core -name '*.h')
PG_HDRS   = $(shell find src/pg -name '*.h')

MODULE_big = transfer
OBJS = $(CORE_SRCS:.c=.o) $(PG_SRCS:.c=.o)

# The install script is assembled from src/sql/NN_*.sql, one file per concern.
# Earlier versions' install scripts, frozen, and the upgrade scripts from
# them live in src/sql/versions/.
DATA_built = $(EXTENSION)--$(EXTVERSION).sql
DATA       = $(sort $(wildcard src/sql/versions/$(EXTENSION)--*.sql))
SQL_PARTS  = $(sort $(wildcard src/sql/*.sql))

# pg_regress: every sql/NAME.sql with expected/NAME.out, in name order.
REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --inputdir=. --load-extension=$(EXTENSION)

# Tuned for the build machine by default, like pgvector; override OPTFLAGS for portable packages.
OPTFLAGS ?= -march=native
PG_CFLAGS = -O3 $(OPTFLAGS) -std=gnu11 -Wno-declaration-after-statement
PG_CPPFLAGS = -Isrc/core -Isrc/pg
SHLIB_LINK = -lopenblas -ljpeg -lpng -lz -lm -lpthread

EXTRA_CLEAN = build

# LLVM bitcode for JIT inlining buys nothing for this extension's compute
# kernels; set before PGXS so its rules never ask for clang.
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS tracks no header dependencies: rebuild every object when a header
# changes, so a rebase that changes a struct can't leave stale objects behind.
$(OBJS): $(CORE_HDRS) $(PG_HDRS)

# PostgreSQL's CFLAGS carry -fno-strict-aliasing, which its own type punning
# needs.  The core includes no PostgreSQL header and accesses memory only
# through its own types, so it is compiled with strict aliasing: with
# PostgreSQL's flag a training step ran about 3% slower (docs/performance.md).
$(CORE_SRCS:.c=.o): override CFLAGS += -fstrict-aliasing

$(DATA_built): $(SQL_PARTS) $(EXTENSION).control
	cat $(SQL_PARTS) > $@

# ---- core unit tests (no PostgreSQL headers, no server) ----
UNIT_CC      ?= $(CC)
UNIT_CFLAGS  = -O2 -g -std=gnu11 $(OPTFLAGS) -Wall -Wextra -Wno-unused-parameter -Wno-format-truncation -Isrc/core -Itest/unit
UNIT_LIBS    = -lopenblas -ljpeg -lpng -lz -lm -lpthread
ifdef SANITIZE
UNIT_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
UNIT_DIR     = build/unit-asan
else
UNIT_DIR     = build/unit
endif
# test/unit mirrors src/core: test/unit/nn/test_x.c tests src/core/nn/.
UNIT_TESTS   = $(patsubst test/unit/%.c,$(UNIT_DIR)/%,$(sort $(shell find test/unit -name 'test_*.c')))
UNIT_CORE_OBJS = $(patsubst src/core/%.c,$(UNIT_DIR)/core/%.o,$(CORE_SRCS))

$(UNIT_DIR)/core/%.o: src/core/%.c $(CORE_HDRS)
	@mkdir -p $(dir $@)
	$(UNIT_CC) $(UNIT_CFLAGS) -c -o $@ $<

$(UNIT_TESTS): $(UNIT_DIR)/%: test/unit/%.c $(UNIT_CORE_OBJS) $(wildcard test/unit/*.h)
	@mkdir -p $(dir $@)
	$(UNIT_CC) $(UNIT_CFLAGS) -o $@ $< $(UNIT_CORE_OBJS) $(UNIT_LIBS)

.PHONY: unittest unittest-build
unittest-build: $(UNIT_TESTS)
# Unit tests print TAP; prove runs them from the repo root so fixture paths resolve.
unittest: unittest-build
	prove -f $(UNIT_TESTS)
