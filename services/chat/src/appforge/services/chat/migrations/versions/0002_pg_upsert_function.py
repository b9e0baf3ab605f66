"""PostgreSQL: UpsertAssistantMessage as one server-side function (one round trip).

The function applies exactly the rules of `appforge.services.chat.domain` (the reference,
used as is on SQLite); tests/integration/test_pg_upsert_function.py checks the two agree on
random write sequences. Locking is the same: the message row is taken FOR UPDATE (or
created once through ON CONFLICT), the app's change cursor bumped last; every statement
of the function sees what committed before it, so work done after the lock sees the
latest state.

Errors are raised with SQLSTATE P0001, DETAIL = the error kind, HINT = the field.

Revision ID: chat_0002
Revises: chat_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "chat_0002"
down_revision = "chat_0001"
branch_labels = None
depends_on = None

FUNCTION = r"""
CREATE OR REPLACE FUNCTION chat_upsert_assistant(
    p_message_id text, p_app_id text, p_execution_id text, p_items jsonb,
    p_status smallint, p_metadata jsonb, p_now bigint
) RETURNS jsonb
LANGUAGE plpgsql AS $fn$
DECLARE
    m chat_messages%ROWTYPE;
    created boolean := false;
    changed boolean := false;
    it jsonb;
    c jsonb;
    v_seq bigint;
    v_kind smallint;
    s_kind smallint;
    s_text text;
    stamp bigint;
    floor_ts bigint;
    old chat_tool_calls%ROWTYPE;
    n_status smallint;
    n_name text; n_args text; n_result text; n_error text; n_deadline bigint;
    old_rank int;
    new_rank int;
    next_pos int;
    new_status smallint;
    new_meta jsonb;
    new_content text;
    cur bigint;
BEGIN
    SELECT * INTO m FROM chat_messages WHERE execution_id = p_execution_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO chat_messages (id, app_id, role, execution_id, content, status, metadata,
                                   version, cursor, created_us, updated_us)
        SELECT p_message_id, a.id, 2, p_execution_id, '', 1, '{}'::jsonb, 0, 0, p_now, p_now
          FROM chat_apps a WHERE a.id = p_app_id
        ON CONFLICT (execution_id) DO NOTHING
        RETURNING * INTO m;
        IF FOUND THEN
            created := true;
        ELSE
            SELECT * INTO m FROM chat_messages WHERE execution_id = p_execution_id FOR UPDATE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'no app %', quote_literal(p_app_id)
                    USING DETAIL = 'not_found', HINT = 'app_id';
            END IF;
        END IF;
    END IF;
    IF m.app_id <> p_app_id THEN
        RAISE EXCEPTION 'execution % belongs to another app', quote_literal(p_execution_id)
            USING DETAIL = 'failed_precondition', HINT = 'execution_id';
    END IF;

    SELECT coalesce(max(timestamp_us), 0) INTO floor_ts
      FROM chat_flow_items WHERE execution_id = p_execution_id;

    FOR it IN SELECT value FROM jsonb_array_elements(p_items) LOOP
        v_seq := (it->>'seq')::bigint;
        v_kind := (it->>'kind')::smallint;
        SELECT kind, text INTO s_kind, s_text
          FROM chat_flow_items WHERE execution_id = p_execution_id AND seq = v_seq;
        IF FOUND THEN
            IF s_kind <> v_kind THEN
                RAISE EXCEPTION 'seq % is already a % item, not a % item', v_seq,
                    CASE s_kind WHEN 1 THEN 'message' ELSE 'tools' END,
                    CASE v_kind WHEN 1 THEN 'message' ELSE 'tools' END
                    USING DETAIL = 'invalid_argument', HINT = format('items[%s]', it->>'i');
            END IF;
            -- A text part only grows.
            IF v_kind = 1 AND length(it->>'text') > length(s_text) THEN
                UPDATE chat_flow_items SET text = it->>'text'
                 WHERE execution_id = p_execution_id AND seq = v_seq;
                changed := true;
            END IF;
        ELSE
            -- Unstamped items get stamps after every stored one: they never repeat.
            stamp := (it->>'ts')::bigint;
            IF stamp IS NULL THEN
                stamp := greatest(p_now, floor_ts + 1);
                floor_ts := stamp;
            END IF;
            INSERT INTO chat_flow_items (execution_id, seq, message_id, kind, text, timestamp_us)
            VALUES (p_execution_id, v_seq, m.id, v_kind,
                    CASE WHEN v_kind = 1 THEN it->>'text' ELSE '' END, stamp);
            changed := true;
        END IF;

        IF v_kind = 2 THEN
            FOR c IN SELECT value FROM jsonb_array_elements(it->'calls') LOOP
                n_status := (c->>'status')::smallint;
                SELECT * INTO old FROM chat_tool_calls
                 WHERE execution_id = p_execution_id AND call_id = c->>'id';
                IF NOT FOUND THEN
                    SELECT coalesce(max(position) + 1, 0) INTO next_pos
                      FROM chat_tool_calls WHERE execution_id = p_execution_id AND seq = v_seq;
                    INSERT INTO chat_tool_calls (execution_id, call_id, seq, position, name,
                        status, arguments_json, result_json, error, deadline_us, updated_us)
                    VALUES (p_execution_id, c->>'id', v_seq, next_pos, c->>'name', n_status,
                        c->>'args', c->>'result', c->>'error', (c->>'deadline')::bigint, p_now);
                    changed := true;
                    CONTINUE;
                END IF;
                -- pending < streaming < any terminal state; the first terminal state wins.
                old_rank := CASE old.status WHEN 1 THEN 0 WHEN 2 THEN 1 ELSE 2 END;
                new_rank := CASE n_status WHEN 1 THEN 0 WHEN 2 THEN 1 ELSE 2 END;
                IF old.status >= 3 AND n_status >= 3 AND n_status <> old.status THEN
                    CONTINUE;
                END IF;
                IF new_rank > old_rank THEN
                    -- A higher status wins and brings its non-empty fields.
                    n_name := coalesce(nullif(c->>'name', ''), old.name);
                    n_args := coalesce(nullif(c->>'args', ''), old.arguments_json);
                    n_result := coalesce(nullif(c->>'result', ''), old.result_json);
                    n_error := coalesce(nullif(c->>'error', ''), old.error);
                    n_deadline := coalesce((c->>'deadline')::bigint, old.deadline_us);
                ELSE
                    -- Anything else may only fill fields still empty.
                    n_status := old.status;
                    n_name := coalesce(nullif(old.name, ''), c->>'name');
                    n_args := coalesce(nullif(old.arguments_json, ''), c->>'args');
                    n_result := coalesce(nullif(old.result_json, ''), c->>'result');
                    n_error := coalesce(nullif(old.error, ''), c->>'error');
                    n_deadline := coalesce(old.deadline_us, (c->>'deadline')::bigint);
                END IF;
                IF (n_status, n_name, n_args, n_result, n_error, n_deadline)
                   IS DISTINCT FROM (old.status, old.name, old.arguments_json, old.result_json,
                                     old.error, old.deadline_us) THEN
                    UPDATE chat_tool_calls
                       SET status = n_status, name = n_name, arguments_json = n_args,
                           result_json = n_result, error = n_error, deadline_us = n_deadline,
                           updated_us = p_now
                     WHERE execution_id = p_execution_id AND call_id = old.call_id;
                    changed := true;
                END IF;
            END LOOP;
        END IF;
    END LOOP;

    -- Message status only moves forward; metadata merges key by key.
    new_status := CASE WHEN p_status IS NULL THEN m.status ELSE greatest(m.status, p_status) END;
    new_meta := m.metadata || coalesce(p_metadata, '{}'::jsonb);
    changed := changed OR created OR new_status <> m.status OR new_meta <> m.metadata;

    IF changed THEN
        SELECT coalesce(string_agg(text, E'\n\n' ORDER BY seq)
                        FILTER (WHERE kind = 1 AND text <> ''), '')
          INTO new_content FROM chat_flow_items WHERE execution_id = p_execution_id;
        -- Last, so the app row (which orders the app's cursors) is held the least time.
        UPDATE chat_apps SET change_seq = change_seq + 1 WHERE id = m.app_id
        RETURNING change_seq INTO cur;
        UPDATE chat_messages
           SET content = new_content, status = new_status, metadata = new_meta,
               version = CASE WHEN created THEN 1 ELSE m.version + 1 END,
               cursor = cur, updated_us = p_now
         WHERE id = m.id
        RETURNING * INTO m;
    END IF;

    RETURN jsonb_build_object(
        'changed', changed,
        'message', to_jsonb(m),
        'items', (SELECT coalesce(jsonb_agg(jsonb_build_array(seq, kind, text, timestamp_us)),
                                  '[]'::jsonb)
                    FROM chat_flow_items WHERE execution_id = p_execution_id),
        'calls', (SELECT coalesce(jsonb_agg(jsonb_build_array(
                             call_id, seq, position, name, status, arguments_json,
                             result_json, error, deadline_us)), '[]'::jsonb)
                    FROM chat_tool_calls WHERE execution_id = p_execution_id)
    );
END
$fn$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "DROP FUNCTION IF EXISTS chat_upsert_assistant"
            "(text, text, text, jsonb, smallint, jsonb, bigint)"
        )
