/*
 * kc_yaml.c: YAML documents for kubeconfigs and exec credentials, read the
 * way kubectl reads them, within bounds.
 *
 * libyaml's yaml_parser_load trusts its input: nesting is unbounded, and
 * its scanner looks at every open flow level for every token, so a 200 KB
 * "[[[[..." kubeconfig took 36 s (quadratic), deaf to signals. Here the
 * document is built from libyaml's event stream instead, with
 *   - nesting refused beyond KC_YAML_MAX_DEPTH (the scanner's work per token
 *     is bounded by the depth, so the parse is linear in the input),
 *   - at most KC_YAML_MAX_NODES nodes (memory stays proportional),
 *   - SIGINT/SIGTERM/SIGHUP honoured (czctl_signal_pending) every few
 *     hundred events,
 *   - anchors registered when their node is complete, so an alias inside
 *     its own anchor is refused as yaml.v2 (kubectl) refuses it.
 * Mapping lookups follow sigs.k8s.io/yaml, which kubectl uses: a key that
 * appears twice takes its last value.
 *
 * Pure C, nothing here raises; no input text goes into an error message
 * except anchor names.
 */
#define _GNU_SOURCE
#include "kubeconfig.h"
#include "czctl.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

/* ---- a small string map (FNV-1a, linear probing) ------------------------ */

static uint64_t map_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static kc_map_slot *map_slot(const kc_map *m, const char *key)
{
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)map_hash(key) & mask;; i = (i + 1) & mask)
        if (!m->slots[i].key || !strcmp(m->slots[i].key, key))
            return &m->slots[i];
}

size_t *kc_map_get(const kc_map *m, const char *key)
{
    if (!m->cap)
        return NULL;
    kc_map_slot *s = map_slot(m, key);
    return s->key ? &s->value : NULL;
}

int kc_map_put(kc_map *m, const char *key, size_t value)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        kc_map bigger = {calloc(cap, sizeof *bigger.slots), 0, cap, m->owns_keys};
        if (!bigger.slots)
            return -1;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key) {
                *map_slot(&bigger, m->slots[i].key) = m->slots[i];
                bigger.n++;
            }
        free(m->slots);
        *m = bigger;
    }
    kc_map_slot *s = map_slot(m, key);
    if (!s->key) {
        char *k = m->owns_keys ? strdup(key) : (char *)key;
        if (!k)
            return -1;
        s->key = k;
        m->n++;
    }
    s->value = value;
    return 0;
}

void kc_map_free(kc_map *m)
{
    if (m->owns_keys)
        for (size_t i = 0; i < m->cap; i++)
            free((char *)m->slots[i].key);
    free(m->slots);
    m->slots = NULL;
    m->n = m->cap = 0;
}

/* ---- lookups --------------------------------------------------------------- */

int kc_yaml_is_null(const yaml_node_t *n)
{
    if (!n)
        return 1;
    if (n->type != YAML_SCALAR_NODE)
        return 0;
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return 0;
    const char *v = (const char *)n->data.scalar.value;
    return !strcmp(v, "") || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

yaml_node_t *kc_yaml_get(yaml_document_t *doc, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    yaml_node_t *found = NULL;   /* the last one: sigs.k8s.io/yaml keeps the last duplicate */
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp((const char *)k->data.scalar.value, key))
            found = yaml_document_get_node(doc, p->value);
    }
    return found;
}

/* ---- loading ------------------------------------------------------------------- */

typedef struct open_node {
    int id;            /* the collection's node id */
    int pending_key;   /* a mapping's key waiting for its value, or 0 */
    char *anchor;      /* registered when the node is complete */
} open_node;

typedef struct loader {
    yaml_document_t *doc;
    open_node *stack;
    size_t depth, cap;
    kc_map anchors;    /* name -> node id */
    size_t nodes;
    int root_done;
} loader;

/* Attaches a complete node to the open collection (or makes it the root). */
static int attach(loader *ld, int id)
{
    if (!ld->depth) {
        ld->root_done = 1;   /* the first node added is the root */
        return 1;
    }
    open_node *top = &ld->stack[ld->depth - 1];
    yaml_node_t *parent = yaml_document_get_node(ld->doc, top->id);
    if (parent->type == YAML_SEQUENCE_NODE)
        return yaml_document_append_sequence_item(ld->doc, top->id, id);
    if (!top->pending_key) {
        top->pending_key = id;
        return 1;
    }
    int ok = yaml_document_append_mapping_pair(ld->doc, top->id, top->pending_key, id);
    top->pending_key = 0;
    return ok;
}

static void set_marks(loader *ld, int id, yaml_mark_t start, yaml_mark_t end)
{
    yaml_node_t *n = yaml_document_get_node(ld->doc, id);
    n->start_mark = start;
    n->end_mark = end;
}

static int register_anchor(loader *ld, const char *anchor, int id)
{
    return !anchor || kc_map_put(&ld->anchors, anchor, (size_t)id) == 0;
}

enum { LOAD_OK = 0, LOAD_BAD = -1, LOAD_INTR = -2, LOAD_OOM = -3 };

/* One event into the document. LOAD_OK, or an error with *problem set
 * (malloc'd for LOAD_BAD). */
static int load_event(loader *ld, yaml_event_t *ev, char **problem)
{
    yaml_document_t *doc = ld->doc;
    int id = 0;
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        size_t len = ev->data.scalar.length;
        if (len > INT32_MAX)
            goto too_big;
        id = yaml_document_add_scalar(doc, ev->data.scalar.tag, ev->data.scalar.value, (int)len,
                                      ev->data.scalar.style);
        if (!id)
            return LOAD_OOM;
        set_marks(ld, id, ev->start_mark, ev->end_mark);
        if (!register_anchor(ld, (const char *)ev->data.scalar.anchor, id))
            return LOAD_OOM;
        break;
    }
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        size_t *target = kc_map_get(&ld->anchors, name);
        if (!target) {
            for (size_t i = 0; i < ld->depth; i++)
                if (ld->stack[i].anchor && !strcmp(ld->stack[i].anchor, name)) {
                    *problem = kc_errf("anchor '%s' value contains itself", name);
                    return LOAD_BAD;
                }
            *problem = kc_errf("unknown anchor '%s' referenced", name);
            return LOAD_BAD;
        }
        id = (int)*target;
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        if (ld->depth >= KC_YAML_MAX_DEPTH) {
            *problem = kc_errf("exceeded max depth of %d", KC_YAML_MAX_DEPTH);
            return LOAD_BAD;
        }
        int seq = ev->type == YAML_SEQUENCE_START_EVENT;
        yaml_char_t *tag = seq ? ev->data.sequence_start.tag : ev->data.mapping_start.tag;
        yaml_char_t *anchor = seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor;
        id = seq ? yaml_document_add_sequence(doc, tag, ev->data.sequence_start.style)
                 : yaml_document_add_mapping(doc, tag, ev->data.mapping_start.style);
        if (!id)
            return LOAD_OOM;
        set_marks(ld, id, ev->start_mark, ev->end_mark);
        if (ld->depth == ld->cap) {
            size_t cap = ld->cap ? ld->cap * 2 : 16;
            open_node *ns = realloc(ld->stack, cap * sizeof *ns);
            if (!ns)
                return LOAD_OOM;
            ld->stack = ns;
            ld->cap = cap;
        }
        open_node *top = &ld->stack[ld->depth++];
        top->id = id;
        top->pending_key = 0;
        top->anchor = anchor ? strdup((const char *)anchor) : NULL;
        if (anchor && !top->anchor)
            return LOAD_OOM;
        ld->nodes++;
        return LOAD_OK;   /* attached when it ends */
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        open_node *top = &ld->stack[--ld->depth];
        id = top->id;
        yaml_document_get_node(doc, id)->end_mark = ev->end_mark;
        int ok = register_anchor(ld, top->anchor, id);
        free(top->anchor);
        top->anchor = NULL;
        if (!ok)
            return LOAD_OOM;
        break;
    }
    default:
        return LOAD_OK;
    }
    if (++ld->nodes > KC_YAML_MAX_NODES)
        goto too_big;
    return attach(ld, id) ? LOAD_OK : LOAD_OOM;
too_big:
    *problem = kc_errf("document too large (more than %d nodes)", KC_YAML_MAX_NODES);
    return LOAD_BAD;
}

int kc_yaml_load(const unsigned char *data, size_t len, yaml_document_t *doc, char **err)
{
    yaml_parser_t parser;
    loader ld = {doc, NULL, 0, 0, {NULL, 0, 0, 1}, 0, 0};
    int rc = LOAD_OK, have_doc = 0;
    char *problem = NULL;
    unsigned long line = 0;
    *err = NULL;
    memset(doc, 0, sizeof *doc);
    if (!yaml_parser_initialize(&parser)) {
        *err = kc_errf("out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&parser, data, len);
    for (unsigned long n = 0; rc == LOAD_OK; n++) {
        if (n % 256 == 0 && czctl_signal_pending()) {
            rc = LOAD_INTR;
            break;
        }
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = parser.error == YAML_MEMORY_ERROR ? LOAD_OOM : LOAD_BAD;
            problem = kc_errf("%s", parser.problem ? parser.problem : "malformed document");
            line = (unsigned long)parser.problem_mark.line + 1;
            break;
        }
        line = (unsigned long)ev.start_mark.line + 1;
        int stop = ev.type == YAML_STREAM_END_EVENT || ev.type == YAML_DOCUMENT_END_EVENT;
        if (ev.type == YAML_DOCUMENT_START_EVENT || (ev.type == YAML_STREAM_END_EVENT && !have_doc)) {
            /* only the first document counts, as for yaml_parser_load and kubectl */
            if (!yaml_document_initialize(doc, NULL, NULL, NULL, 1, 1))
                rc = LOAD_OOM;
            have_doc = 1;
        } else if (have_doc) {
            rc = load_event(&ld, &ev, &problem);
        }
        yaml_event_delete(&ev);
        if (stop)
            break;
    }
    for (size_t i = 0; i < ld.depth; i++)
        free(ld.stack[i].anchor);
    free(ld.stack);
    kc_map_free(&ld.anchors);
    yaml_parser_delete(&parser);
    if (rc == LOAD_OK)
        return 0;
    if (have_doc)
        yaml_document_delete(doc);
    memset(doc, 0, sizeof *doc);
    if (rc == LOAD_INTR)
        *err = kc_errf("interrupted");
    else if (rc == LOAD_OOM)
        *err = kc_errf("out of memory");
    else
        *err = kc_errf("line %lu: yaml: %s", line, problem ? problem : "malformed document");
    free(problem);
    return rc == LOAD_INTR ? -2 : -1;
}
