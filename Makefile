# czctl build. `make` builds ./czctl; `make test` checks the Debian packages,
# builds, builds the C unit tests and runs tests/run. See `make help`.

VERSION   ?= $(shell cat VERSION 2>/dev/null || echo 0.1.0)
PREFIX    ?= /usr/local
DESTDIR   ?=
BUILD     ?= build
CC        ?= cc
HOSTCC    ?= $(CC)
CFLAGS    ?= -O2 -g
SANFLAGS  ?=

MULTIARCH := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || $(CC) -print-multiarch)
LIBDIR    := /usr/lib/$(MULTIARCH)
PKGS      := lua5.4 libcurl yaml-0.1
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# Lua, libyaml and lua-cjson are linked statically (small, and a shared
# liblua costs start-up time). libcurl is NOT linked: core/curl_lazy.c loads
# libcurl.so.4 with dlopen on first use, so `czctl version` or `help` never
# pay for its ~30 shared libraries.
STATIC_LIBS := $(LIBDIR)/liblua5.4-cjson.a $(LIBDIR)/liblua5.4.a $(LIBDIR)/libyaml.a

ALL_CFLAGS  = -std=c11 -Wall -Wextra -Werror $(CFLAGS) $(SANFLAGS) \
              -Icore -I$(BUILD) $(PKG_CFLAGS) -DCZCTL_VERSION='"$(VERSION)"'
ALL_LDFLAGS = $(SANFLAGS) $(LDFLAGS)
# libssl (Debian libssl-dev): the direct tunnel landing's mutual TLS (core/landing_tls.c).
LIBS        = $(STATIC_LIBS) -lssl -lcrypto -lm -ldl

CORE_SRCS := $(sort $(wildcard core/*.c))
CORE_OBJS := $(patsubst core/%.c,$(BUILD)/core/%.o,$(CORE_SRCS))
LIB_OBJS  := $(filter-out $(BUILD)/core/main.o,$(CORE_OBJS)) $(BUILD)/embedded.o
LUA_SRCS  := $(shell find lua -name '*.lua' 2>/dev/null | LC_ALL=C sort) \
             $(sort $(wildcard recipes/*.lua))
CTEST_SRCS := $(sort $(wildcard tests/c/test_*.c))
# The normal build puts test programs next to their sources (tests/run finds
# them there); other builds (sanitize) keep theirs under $(BUILD).
# Fuzz targets (fuzz/fuzz_NAME.c): each is also built with fuzz/standalone.c
# as tests/c/test_fuzz_NAME, which runs it over fuzz/corpus/NAME (the
# regression check of `make test`; docs/fuzzing.md).
FUZZ_NAMES := $(patsubst fuzz/fuzz_%.c,%,$(sort $(wildcard fuzz/fuzz_*.c)))
ifeq ($(BUILD),build)
CTEST_BINS := $(CTEST_SRCS:.c=)
FUZZ_TESTS := $(patsubst %,tests/c/test_fuzz_%,$(FUZZ_NAMES))
BIN        := czctl
else
CTEST_BINS := $(patsubst tests/c/%.c,$(BUILD)/tests/c/%,$(CTEST_SRCS))
FUZZ_TESTS := $(patsubst %,$(BUILD)/tests/c/test_fuzz_%,$(FUZZ_NAMES))
BIN        := $(BUILD)/czctl
endif

.PHONY: all deps test ctests demo sanitize faults valgrind fuzz fuzz-build install uninstall docs clean help bench FORCE
.DEFAULT_GOAL := all

all: $(BIN)

help:
	@echo "make            build ./czctl"
	@echo "make test       install missing packages, build, run tests/run"
	@echo "make demo       install missing packages, build, run scripts/demo"
	@echo "make sanitize   C tests and Lua specs under ASan+UBSan (build/san)"
	@echo "make faults     the whole API fault matrix (docs/faults.md; make test runs its quick part)"
	@echo "make valgrind   C unit tests under valgrind"
	@echo "make fuzz       build the libFuzzer targets (build/fuzz/bin); FUZZ_SECONDS=N runs each N s"
	@echo "make install    install czctl (stripped), its man page, shell completions, examples and"
	@echo "                docs under \$$(DESTDIR)\$$(PREFIX) (PREFIX=$(PREFIX))"
	@echo "make uninstall  remove exactly what make install installed"
	@echo "make bench      bench/version.sh"
	@echo "make clean      remove build outputs"

deps:
	@scripts/deps

# Every build directory records its flags; a change rebuilds everything.
$(BUILD)/flags: FORCE
	@mkdir -p $(BUILD)/core $(BUILD)/tests/c
	@echo '$(ALL_CFLAGS) $(ALL_LDFLAGS) $(LIBS)' > $@.new; \
	 if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi

# The commit czctl is built from (`czctl version`); only embed.o depends on it.
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
$(BUILD)/commit: FORCE
	@mkdir -p $(BUILD)
	@echo '$(COMMIT)' > $@.new; \
	 if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi

$(BUILD)/core/embed.o: core/embed.c $(BUILD)/flags $(BUILD)/commit
	$(CC) $(ALL_CFLAGS) -DCZCTL_COMMIT='"$(COMMIT)"' -MMD -MP -c -o $@ $<

# The list of embedded files; adding or removing a .lua file regenerates.
$(BUILD)/embed.list: FORCE
	@mkdir -p $(BUILD)
	@echo '$(LUA_SRCS)' > $@.new; \
	 if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi

$(BUILD)/embed-tool: core/tools/embed.c
	@mkdir -p $(BUILD)
	$(HOSTCC) -std=c11 -Wall -Wextra -Werror -O1 -o $@ $<

$(BUILD)/embedded.c: $(BUILD)/embed-tool $(BUILD)/embed.list $(LUA_SRCS)
	@echo "embed $@ ($(words $(LUA_SRCS)) Lua files)"
	@$(BUILD)/embed-tool $@ $(LUA_SRCS)

$(BUILD)/embedded.o: $(BUILD)/embedded.c core/embed.h $(BUILD)/flags
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/core/%.o: core/%.c $(BUILD)/flags
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/libczctl.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(BUILD)/core/main.o $(BUILD)/libczctl.a
	$(CC) $(ALL_LDFLAGS) -o $@ $(BUILD)/core/main.o $(BUILD)/libczctl.a $(LIBS)

# C unit tests: one program per tests/c/test_*.c, linked against the core.
$(BUILD)/tests/c/%.o: tests/c/%.c $(BUILD)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/c -MMD -MP -c -o $@ $<

.SECONDEXPANSION:
$(CTEST_BINS): $(BUILD)/tests/c/$$(notdir $$@).o $(BUILD)/libczctl.a
	$(CC) $(ALL_LDFLAGS) -o $@ $< $(BUILD)/libczctl.a $(LIBS)

ctests: $(CTEST_BINS) $(FUZZ_TESTS)

$(BUILD)/fuzz/%.o: fuzz/%.c $(BUILD)/flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ifuzz -MMD -MP -c -o $@ $<

$(FUZZ_TESTS): $(BUILD)/fuzz/fuzz_$$(patsubst test_fuzz_%,%,$$(notdir $$@)).o $(BUILD)/fuzz/standalone.o \
               $(BUILD)/libczctl.a
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LIBS)

# Coverage-guided fuzzing: clang's libFuzzer with ASan and UBSan, in
# build/fuzz. `make fuzz` builds build/fuzz/bin/NAME for each target;
# FUZZ_SECONDS=N then runs each for N seconds (scripts/run-fuzz; new inputs
# go to build/fuzz/corpus/NAME, crashes to build/fuzz/crashes).
FUZZ_CC ?= clang
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_BINS := $(patsubst %,$(BUILD)/bin/%,$(FUZZ_NAMES))

fuzz:
	@scripts/deps --fuzz
	@$(MAKE) --no-print-directory BUILD=build/fuzz CC=$(FUZZ_CC) CFLAGS='-O1 -g -DCZCTL_FUZZ_LUA_LINES' \
	  SANFLAGS='$(FUZZ_SAN) -fsanitize=fuzzer-no-link' fuzz-build
ifneq ($(strip $(FUZZ_SECONDS)),)
	@scripts/run-fuzz $(FUZZ_SECONDS) build/fuzz $(FUZZ_NAMES)
endif

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BINS): $(BUILD)/bin/%: $(BUILD)/fuzz/fuzz_%.o $(BUILD)/libczctl.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LIBS)

-include $(wildcard $(BUILD)/core/*.d $(BUILD)/tests/c/*.d $(BUILD)/fuzz/*.d)

# tests/run also runs luacheck (tests/lint) and the C tests built with the
# sanitizers (tests/sanitize), in parallel with the other tests.
test: deps
	@$(MAKE) --no-print-directory all ctests
	@tests/run

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo

# Build everything again under ASan+UBSan into build/san and run the C unit
# tests and the Lua specs with that binary; any sanitizer report fails.
sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build/san \
	  SANFLAGS='-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined' \
	  CFLAGS='-O1 -g' all ctests
	@scripts/run-sanitized build/san

# The whole API fault matrix (make test runs its quick part): every request
# of intercept setup and session close with every fault; docs/faults.md.
faults: deps
	@$(MAKE) --no-print-directory all
	@tests/e2e/test_faults.py --all

valgrind:
	@scripts/deps --valgrind
	@$(MAKE) --no-print-directory all ctests
	@scripts/run-valgrind $(CTEST_BINS) $(FUZZ_TESTS)

bench: all
	@bench/version.sh

# The man page and completion scripts are generated by czctl itself from the
# command declarations, with no user recipes in sight.
GEN_ENV := env -u CZCTL_RECIPE_PATH XDG_CONFIG_HOME=/nonexistent
$(BUILD)/czctl.1: $(BIN)
	$(GEN_ENV) ./$(BIN) __man > $@.tmp && mv $@.tmp $@
$(BUILD)/completion/czctl.bash: $(BIN)
	@mkdir -p $(dir $@)
	$(GEN_ENV) ./$(BIN) completion bash > $@.tmp && mv $@.tmp $@
$(BUILD)/completion/_czctl: $(BIN)
	@mkdir -p $(dir $@)
	$(GEN_ENV) ./$(BIN) completion zsh > $@.tmp && mv $@.tmp $@
$(BUILD)/completion/czctl.fish: $(BIN)
	@mkdir -p $(dir $@)
	$(GEN_ENV) ./$(BIN) completion fish > $@.tmp && mv $@.tmp $@

docs: $(BUILD)/czctl.1 $(BUILD)/completion/czctl.bash $(BUILD)/completion/_czctl $(BUILD)/completion/czctl.fish

STRIP     ?= strip
BINDIR    := $(DESTDIR)$(PREFIX)/bin
MANDIR    := $(DESTDIR)$(PREFIX)/share/man/man1
BASHCOMP  := $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHCOMP   := $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions
FISHCOMP  := $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
DOCDIR    := $(DESTDIR)$(PREFIX)/share/doc/czctl
DOC_FILES := README.md $(wildcard docs/*.md)
EXAMPLES  := $(wildcard examples/*.lua examples/*.yaml) $(wildcard examples/recipes/*.lua)

install: $(BIN) docs
	install -d $(BINDIR) $(MANDIR) $(BASHCOMP) $(ZSHCOMP) $(FISHCOMP) $(DOCDIR)/examples/recipes
	install -m 0755 --strip-program=$(STRIP) -s $(BIN) $(BINDIR)/czctl
	install -m 0644 $(BUILD)/czctl.1 $(MANDIR)/czctl.1
	install -m 0644 $(BUILD)/completion/czctl.bash $(BASHCOMP)/czctl
	install -m 0644 $(BUILD)/completion/_czctl $(ZSHCOMP)/_czctl
	install -m 0644 $(BUILD)/completion/czctl.fish $(FISHCOMP)/czctl.fish
	install -m 0644 $(DOC_FILES) $(DOCDIR)/
	install -m 0644 $(filter-out examples/recipes/%,$(EXAMPLES)) $(DOCDIR)/examples/
	install -m 0644 $(filter examples/recipes/%,$(EXAMPLES)) $(DOCDIR)/examples/recipes/

uninstall:
	rm -f $(BINDIR)/czctl $(MANDIR)/czctl.1 $(BASHCOMP)/czctl $(ZSHCOMP)/_czctl $(FISHCOMP)/czctl.fish
	rm -f $(addprefix $(DOCDIR)/,$(notdir $(DOC_FILES))) \
	      $(addprefix $(DOCDIR)/examples/,$(notdir $(filter-out examples/recipes/%,$(EXAMPLES)))) \
	      $(addprefix $(DOCDIR)/examples/recipes/,$(notdir $(filter examples/recipes/%,$(EXAMPLES))))
	-rmdir $(DOCDIR)/examples/recipes $(DOCDIR)/examples $(DOCDIR) 2>/dev/null

clean:
	rm -rf build czctl $(CTEST_SRCS:.c=) $(FUZZ_TESTS)

FORCE:
