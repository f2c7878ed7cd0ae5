/*
 * class.c: the one way a C module of czctl hands a resource to Lua (see
 * "handle classes" in czctl.h): a userdata of a registered class with a
 * named metatable, methods under __index apart from the metamethods, one
 * idempotent release behind :close(), __close and __gc, and __tostring.
 *
 * Modelled on Lua's liolib (createmeta, aux_close, f_tostring). A handle's
 * block starts with a hidden header holding its closed flag; the pointer
 * modules get is the payload after it. Must not know any class.
 */
#include <stddef.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "czctl.h"

/* Padded to the alignment Lua gives a userdata block (LUAI_MAXALIGN: a
 * lua_Number, a double, a pointer, a lua_Integer, a long), which the
 * payload after it then keeps. */
typedef union handle_head {
    int closed;
    lua_Number n;
    double d;
    void *p;
    lua_Integer i;
    long l;
} handle_head;

static void *payload_of(void *block)
{
    return (handle_head *)block + 1;
}

static handle_head *head_of(void *payload)
{
    return (handle_head *)payload - 1;
}

static const czctl_class *class_of(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Releases the handle once; later calls do nothing. */
static void handle_release(void *payload, const czctl_class *cls)
{
    handle_head *h = head_of(payload);
    if (!h->closed) {
        h->closed = 1;
        cls->release(payload);
    }
}

/* __gc and __close (and the default :close()): upvalue 1 is the class. */
static int handle_close(lua_State *L)
{
    const czctl_class *cls = class_of(L);
    handle_release(czctl_handle_check(L, 1, cls), cls);
    return 0;
}

static int handle_tostring(lua_State *L)
{
    const czctl_class *cls = class_of(L);
    void *p = czctl_handle_check(L, 1, cls);
    if (head_of(p)->closed)
        lua_pushfstring(L, "%s (closed)", cls->label);
    else if (cls->describe)
        cls->describe(L, p);
    else
        lua_pushfstring(L, "%s (%p)", cls->label, p);
    return 1;
}

void czctl_class_register(lua_State *L, const czctl_class *cls)
{
    if (!luaL_newmetatable(L, cls->name)) {   /* sets __name */
        lua_pop(L, 1);
        return;
    }
    static const char *const closers[] = {"__gc", "__close"};
    for (size_t i = 0; i < sizeof closers / sizeof *closers; i++) {
        lua_pushlightuserdata(L, (void *)cls);
        lua_pushcclosure(L, handle_close, 1);
        lua_setfield(L, -2, closers[i]);
    }
    lua_pushlightuserdata(L, (void *)cls);
    lua_pushcclosure(L, handle_tostring, 1);
    lua_setfield(L, -2, "__tostring");
    lua_newtable(L);   /* the methods */
    if (cls->methods)
        luaL_setfuncs(L, cls->methods, 0);
    if (lua_getfield(L, -1, "close") == LUA_TNIL) {
        lua_pushlightuserdata(L, (void *)cls);
        lua_pushcclosure(L, handle_close, 1);
        lua_setfield(L, -3, "close");
    }
    lua_pop(L, 1);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

void *czctl_handle_new(lua_State *L, const czctl_class *cls, size_t size, int nuv)
{
    void *block = lua_newuserdatauv(L, sizeof(handle_head) + size, nuv);
    memset(block, 0, sizeof(handle_head) + size);
    czctl_class_register(L, cls);
    luaL_setmetatable(L, cls->name);
    return payload_of(block);
}

void *czctl_handle_check(lua_State *L, int arg, const czctl_class *cls)
{
    return payload_of(luaL_checkudata(L, arg, cls->name));
}

void *czctl_handle_check_open(lua_State *L, int arg, const czctl_class *cls)
{
    void *p = czctl_handle_check(L, arg, cls);
    if (head_of(p)->closed)
        luaL_argerror(L, arg, lua_pushfstring(L, "%s is closed", cls->label));
    return p;
}

void czctl_handle_close(lua_State *L, int arg, const czctl_class *cls)
{
    handle_release(czctl_handle_check(L, arg, cls), cls);
}

int czctl_handle_is_closed(const void *payload)
{
    return head_of((void *)payload)->closed;
}
