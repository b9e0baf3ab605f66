-- chat_upsert_assistant_v2: UpsertAssistantMessage on PostgreSQL in one round trip.
--
-- The rules are those of appforge.services.chat.domain (the reference, run as is on SQLite):
-- tests/integration/test_store_agrees_with_domain.py checks the two agree on random write
-- sequences, and tests/unit/test_chat_sql_constants.py pins the numbers below to the
-- domain's enums. The name carries the version and the signature is part of it, so two
-- releases can run side by side: a change of rules or of the result is a new file with a
-- new name, created by a new migration; an old one is dropped only once no release calls it.
--
-- Cost: what the write carries, never the whole message. Items and calls are read by
-- primary key, the stamp floor from the message row (chat_0003), text grows by appending,
-- and the result is what changed (the delta), not the message's flow. A batch's next
-- position is a max() over the execution's calls (there are few), read only for new calls.
--
-- Locking: the message row is taken FOR UPDATE (or created once through ON CONFLICT), the
-- app's change cursor bumped last. Errors: SQLSTATE P0001, DETAIL = the error kind,
-- HINT = the field.
CREATE FUNCTION chat_upsert_assistant_v2(
    p_message_id text, p_app_id text, p_execution_id text, p_items jsonb,
    p_status smallint, p_metadata jsonb, p_now bigint
) RETURNS jsonb
LANGUAGE plpgsql AS $fn$
DECLARE
    c_kind_message CONSTANT smallint := 1;     -- ItemKind.MESSAGE
    c_kind_tools CONSTANT smallint := 2;       -- ItemKind.TOOLS
    c_role_assistant CONSTANT smallint := 2;   -- Role.ASSISTANT
    c_message_pending CONSTANT smallint := 1;  -- MessageStatus.PENDING
    c_tool_pending CONSTANT smallint := 1;     -- ToolStatus.PENDING
    c_tool_streaming CONSTANT smallint := 2;   -- ToolStatus.STREAMING
    c_tool_terminal CONSTANT smallint := 3;    -- ToolStatus.SUCCEEDED
    m chat_messages%ROWTYPE;
    created boolean := false;
    it jsonb;
    c jsonb;
    v_seq bigint;
    v_kind smallint;
    v_where text;
    v_offset bigint;
    v_text text;
    s_found boolean;
    s_kind smallint;
    s_text text;
    s_length bigint;
    v_overlap text;
    v_growth text;
    stamp bigint;
    floor_ts bigint;
    last_stamp bigint := 0;
    old chat_tool_calls%ROWTYPE;
    n_status smallint;
    n_name text; n_args text; n_result text; n_error text; n_deadline bigint;
    old_rank int;
    new_rank int;
    next_pos int;
    -- What changed, built as the loop goes (no table is read again for the result):
    new_items jsonb := '{}'::jsonb;     -- seq -> [seq, kind, text, stamp], items inserted
    appended jsonb := '{}'::jsonb;      -- seq -> [offset, text], text added to stored items
    new_calls jsonb := '{}'::jsonb;     -- call_id -> the call's row as inserted, then merged
    updated_calls jsonb := '{}'::jsonb; -- call_id -> the call's row after the merge
    v_row jsonb;
    new_status smallint;
    status_changed boolean;
    meta_changes jsonb;
    flow_changed boolean := false;
    changed boolean;
    cur bigint;
BEGIN
    SELECT * INTO m FROM chat_messages WHERE execution_id = p_execution_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO chat_messages (id, app_id, role, execution_id, content, status, metadata,
                                   version, cursor, created_us, updated_us)
        SELECT p_message_id, a.id, c_role_assistant, p_execution_id, '', c_message_pending,
               '{}'::jsonb, 0, 0, p_now, p_now
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

    FOR it IN SELECT value FROM jsonb_array_elements(p_items) LOOP
        v_seq := (it->>'seq')::bigint;
        v_kind := (it->>'kind')::smallint;
        v_where := format('items[%s]', it->>'i');
        SELECT kind, text INTO s_kind, s_text
          FROM chat_flow_items WHERE execution_id = p_execution_id AND seq = v_seq;
        s_found := FOUND;
        IF s_found AND s_kind <> v_kind THEN
            RAISE EXCEPTION 'seq % is already a % item, not a % item', v_seq,
                CASE s_kind WHEN c_kind_message THEN 'message' ELSE 'tools' END,
                CASE v_kind WHEN c_kind_message THEN 'message' ELSE 'tools' END
                USING DETAIL = 'invalid_argument', HINT = v_where;
        END IF;
        IF NOT s_found THEN
            s_text := '';
        END IF;

        IF v_kind = c_kind_message THEN
            -- Text only grows and never changes behind the writer (domain.text_growth).
            v_offset := coalesce((it->>'offset')::bigint, 0);
            v_text := it->>'text';
            s_length := length(s_text);
            IF v_offset > s_length THEN
                RAISE EXCEPTION 'appends at offset %, past the end of the text (% characters)',
                    v_offset, s_length
                    USING DETAIL = 'failed_precondition', HINT = v_where || '.message.offset';
            END IF;
            v_overlap := substr(s_text, v_offset::int + 1, length(v_text));
            IF left(v_text, length(v_overlap)) <> v_overlap THEN
                RAISE EXCEPTION 'disagrees with the stored text at offset %: text never '
                    'changes behind the writer', v_offset
                    USING DETAIL = 'failed_precondition', HINT = v_where || '.message.text';
            END IF;
            v_growth := substr(v_text, length(v_overlap) + 1);
        END IF;

        IF NOT s_found THEN
            -- A new item. Unstamped ones get stamps after every stored one.
            stamp := (it->>'ts')::bigint;
            IF stamp IS NULL THEN
                IF floor_ts IS NULL THEN
                    -- The message keeps the latest stamp; the last item's stamp covers
                    -- items written by v1, which does not keep it.
                    SELECT greatest(m.last_stamp_us, coalesce(max(f.timestamp_us), 0))
                      INTO floor_ts
                      FROM (SELECT timestamp_us FROM chat_flow_items
                             WHERE execution_id = p_execution_id
                             ORDER BY seq DESC LIMIT 1) f;
                END IF;
                stamp := greatest(p_now, floor_ts + 1);
                floor_ts := stamp;
            END IF;
            last_stamp := greatest(last_stamp, stamp);
            INSERT INTO chat_flow_items (execution_id, seq, message_id, kind, text, timestamp_us)
            VALUES (p_execution_id, v_seq, m.id, v_kind,
                    CASE WHEN v_kind = c_kind_message THEN v_growth ELSE '' END, stamp);
            new_items := new_items || jsonb_build_object(v_seq::text, jsonb_build_array(
                v_seq, v_kind, CASE WHEN v_kind = c_kind_message THEN v_growth ELSE '' END,
                stamp));
            flow_changed := true;
        ELSIF v_kind = c_kind_message AND v_growth <> '' THEN
            UPDATE chat_flow_items SET text = text || v_growth
             WHERE execution_id = p_execution_id AND seq = v_seq;
            IF new_items ? v_seq::text THEN
                new_items := jsonb_set(new_items, ARRAY[v_seq::text, '2'],
                                       to_jsonb(s_text || v_growth));
            ELSE
                appended := appended || jsonb_build_object(v_seq::text, jsonb_build_array(
                    coalesce((appended->v_seq::text->>0)::bigint, s_length),
                    coalesce(appended->v_seq::text->>1, '') || v_growth));
            END IF;
            flow_changed := true;
        END IF;

        IF v_kind = c_kind_tools THEN
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
                    new_calls := new_calls || jsonb_build_object(c->>'id', jsonb_build_array(
                        c->>'id', v_seq, next_pos, c->>'name', n_status, c->>'args',
                        c->>'result', c->>'error', (c->>'deadline')::bigint));
                    flow_changed := true;
                    CONTINUE;
                END IF;
                -- pending < streaming < any terminal state; the first terminal state wins.
                old_rank := CASE old.status WHEN c_tool_pending THEN 0
                                            WHEN c_tool_streaming THEN 1 ELSE 2 END;
                new_rank := CASE n_status WHEN c_tool_pending THEN 0
                                          WHEN c_tool_streaming THEN 1 ELSE 2 END;
                IF old.status >= c_tool_terminal AND n_status >= c_tool_terminal
                   AND n_status <> old.status THEN
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
                    v_row := jsonb_build_array(old.call_id, old.seq, old.position, n_name,
                        n_status, n_args, n_result, n_error, n_deadline);
                    IF new_calls ? old.call_id THEN
                        new_calls := new_calls || jsonb_build_object(old.call_id, v_row);
                    ELSE
                        updated_calls := updated_calls || jsonb_build_object(old.call_id, v_row);
                    END IF;
                    flow_changed := true;
                END IF;
            END LOOP;
        END IF;
    END LOOP;

    -- Message status only moves forward; metadata merges key by key.
    new_status := CASE WHEN p_status IS NULL THEN m.status ELSE greatest(m.status, p_status) END;
    SELECT coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb) INTO meta_changes
      FROM jsonb_each(coalesce(p_metadata, '{}'::jsonb)) AS e
     WHERE NOT (m.metadata ? e.key) OR m.metadata->e.key <> e.value;
    status_changed := new_status <> m.status;
    changed := created OR flow_changed OR status_changed OR meta_changes <> '{}'::jsonb;

    IF changed THEN
        -- Last, so the app row (which orders the app's cursors) is held the least time.
        UPDATE chat_apps SET change_seq = change_seq + 1 WHERE id = m.app_id
        RETURNING change_seq INTO cur;
        UPDATE chat_messages
           SET status = new_status, metadata = m.metadata || meta_changes,
               last_stamp_us = greatest(m.last_stamp_us, last_stamp),
               version = CASE WHEN created THEN 1 ELSE m.version + 1 END,
               cursor = cur, updated_us = p_now
         WHERE id = m.id
        RETURNING * INTO m;
    END IF;

    RETURN jsonb_build_object(
        'changed', changed,
        'created', created,
        'status_changed', status_changed,
        'message', to_jsonb(m) - 'content',
        'metadata_changes', meta_changes,
        'new_items', (SELECT coalesce(jsonb_agg(v), '[]'::jsonb) FROM jsonb_each(new_items) e(k, v)),
        'appended', (SELECT coalesce(jsonb_agg(jsonb_build_array(k::bigint, v->0, v->1)),
                                     '[]'::jsonb)
                       FROM jsonb_each(appended) AS a(k, v)),
        'new_calls', (SELECT coalesce(jsonb_agg(v), '[]'::jsonb) FROM jsonb_each(new_calls) e(k, v)),
        'updated_calls', (SELECT coalesce(jsonb_agg(v), '[]'::jsonb)
                            FROM jsonb_each(updated_calls) e(k, v))
    );
END
$fn$;
