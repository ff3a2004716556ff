#pragma once
// A QListView that says something useful while it is empty ("No sessions yet", "Answers appear
// here") instead of showing a blank box.
#include <QListView>

class PlaceholderListView : public QListView {
    Q_OBJECT
  public:
    using QListView::QListView;
    void setPlaceholderText(const QString &text);
    QString placeholderText() const { return m_placeholder; }

  protected:
    void paintEvent(QPaintEvent *event) override;

  private:
    QString m_placeholder;
};
