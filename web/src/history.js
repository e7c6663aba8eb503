// Undo/redo of the drawing: snapshots of NiiVue's drawing bitmap after each stroke.
const MAX_SNAPSHOTS = 40;

export class UndoStack {
  constructor(initial) {
    this.snapshots = [initial.slice()];
    this.index = 0;
  }
  push(bitmap) {
    this.snapshots = this.snapshots.slice(0, this.index + 1);
    this.snapshots.push(bitmap.slice());
    if (this.snapshots.length > MAX_SNAPSHOTS) this.snapshots.shift();
    this.index = this.snapshots.length - 1;
  }
  undo() {
    if (this.index === 0) return null;
    this.index -= 1;
    return this.snapshots[this.index];
  }
  redo() {
    if (this.index >= this.snapshots.length - 1) return null;
    this.index += 1;
    return this.snapshots[this.index];
  }
}
