/**
 * What the sidebar knows: the rows the kernel's comm target `refbook` pushed (see
 * refbook/kernel/sidebar.py for the messages), applied delta by delta.
 */

export interface RefRow {
  id: string;
  short_id: string;
  names: string[];
  state: string;
  size: number | null;
  node: string;
  owner: string;
  holders: string[];
  made_by: string;
  error: string | null;
}

export interface NodeRow {
  node_id: string;
  alive: boolean;
  is_head: boolean;
  capacity: number | null;
  used: number | null;
  pinned: number | null;
  spilled_bytes: number | null;
  spill_threshold: number | null;
  workers: number | null;
  cpus: number | null;
  cpus_free: number | null;
}

export interface ActorRow {
  actor_id: string;
  name: string | null;
  class_name: string;
  state: string;
  node_id: string | null;
  pid: number | null;
  restarts: number;
  pending_calls: number;
}

export interface Delta {
  type: 'delta';
  cluster?: { running: boolean; driver?: string };
  refs?: { upsert: RefRow[]; remove: string[] };
  nodes?: NodeRow[];
  actors?: ActorRow[];
}

export class SidebarModel {
  refs = new Map<string, RefRow>();
  nodes: NodeRow[] = [];
  actors: ActorRow[] = [];
  running: boolean | null = null;

  apply(d: Delta): void {
    if (d.cluster) {
      this.running = d.cluster.running;
    }
    if (d.refs) {
      for (const r of d.refs.upsert) {
        this.refs.set(r.id, r);
      }
      for (const id of d.refs.remove) {
        this.refs.delete(id);
      }
    }
    if (d.nodes) {
      this.nodes = d.nodes;
    }
    if (d.actors) {
      this.actors = d.actors;
    }
  }

  clear(): void {
    this.refs.clear();
    this.nodes = [];
    this.actors = [];
    this.running = null;
  }

  /** Rows sorted by variable name (unnamed last), then id. */
  sortedRefs(): RefRow[] {
    const rows = Array.from(this.refs.values());
    const key = (r: RefRow) => (r.names.length ? r.names[0] : '\uffff' + r.id);
    rows.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
    return rows;
  }
}

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) {
    return '';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}
